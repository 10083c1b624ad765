// Node-RED settings for running atlas-backup-flow.json headless: no editor, the admin
// HTTP API (which the inject node's "trigger" uses: POST /inject/<node-id>) on the
// loopback only, no HTTP-in nodes. The port is $NODE_RED_PORT (default 1880).
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NODE_RED_PORT || "1880", 10),
    httpAdminRoot: "/",
    httpNodeRoot: false,
    disableEditor: true,
    flowFilePretty: true,
    // The flow holds no secrets; without a key Node-RED would make one and warn.
    credentialSecret: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
    telemetry: { enabled: false },
    diagnostics: { enabled: false },
};
