// Starts this project's Azurite with its queue clean-up every FANOUT_AZURITE_QUEUE_GC_MS milliseconds
// instead of every 60 s. Each message body is an extent, and the clean-up removes every extent no
// message refers to any more, each with a scan of all extents: after a minute of receive-and-delete
// at hundreds of messages a second that is tens of thousands of scans of tens of thousands, and
// Azurite stops answering for minutes. Swept every second, it has a few hundred to remove. The
// arguments are Azurite's own; Azurite reads the interval when its queue server starts.
"use strict";
const path = require("path");

const dist = path.join(__dirname, "..", "node_modules", "azurite", "dist", "src");
const interval = Number(process.env.FANOUT_AZURITE_QUEUE_GC_MS);
if (Number.isInteger(interval) && interval > 0) {
  require(path.join(dist, "queue", "utils", "constants.js")).DEFAULT_GC_INTERVAL_MS = interval;
}
require(path.join(dist, "azurite.js"));
