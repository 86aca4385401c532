"""The Put Message transport: prebuilt requests on keep-alive connections. Imports nothing of the app but errors."""
