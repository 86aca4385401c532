"""The Put Message transport: prebuilt requests on keep-alive connections. Imports nothing of the app but
core's errors and retry policy; what it reports (its retries) it is handed."""
