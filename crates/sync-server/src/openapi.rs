//! `GET /openapi.json`: the API described for integrators, with the schemas from `schemas/`.

use serde_json::{Value, json};

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut schemas = serde_json::Map::new();
    for (file, text) in gridsync_core::schema::all() {
        let name = file.trim_end_matches(".schema.json");
        let mut schema: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // Each schema keeps its own `$defs`; an `$id` makes its `#/$defs/...` references resolve there.
        if let Some(o) = schema.as_object_mut() {
            o.insert("$id".into(), json!(format!("urn:gridsync:schema:{name}")));
        }
        schemas.insert(name.to_string(), schema);
    }
    let body = |name: &str| json!({ "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } } });
    let ok = |name: &str, what: &str| json!({ "description": what, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } } });
    let err = json!({ "description": "an error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/error" } } } });
    let revoked = json!({ "description": "revoked (code `revoked`: the user was revoked; the attempt is counted for the device) or forbidden", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/error" } } } });
    let busy = json!({ "description": "code `busy`: more requests than the server handles at once, or no room left for request bodies; retry after `Retry-After` seconds", "headers": { "Retry-After": { "schema": { "type": "integer" } } }, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/error" } } } });
    let slow = json!({ "description": "code `too_slow`: the body arrived too slowly (it must arrive within 30 s plus 1 s per KiB received)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/error" } } } });
    let large = json!({ "description": "code `too_large`: the body is over this route's cap after gzip inflation (sync 16 MiB, others 64 KiB), or `too_many_changes`", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/error" } } } });
    let quota = json!({ "description": "code `quota_exceeded`: the user registered the most devices a day allows", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/error" } } } });
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": { "title": "Gridsync sync server", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Scoped one-round-trip sync of Automerge report and patrol documents. See docs/protocol.md." },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/v1/server": { "get": { "summary": "Which server this is: its id (made once with its data), protocol version and county", "security": [],
                "responses": { "200": ok("server-info", "the server") } } },
            "/v1/devices": { "post": { "summary": "Register a device (user token)", "requestBody": body("device-registration"),
                "responses": { "201": ok("device-registered", "the device and its token"), "400": err, "401": err, "403": revoked, "409": err } } },
            "/v1/whoami": { "get": { "summary": "Who this token belongs to", "responses": { "200": ok("whoami", "the user"), "401": err, "403": revoked } } },
            "/v1/sync": { "post": { "summary": "Push the outbox and pull one page of changes in scope (device token)",
                "requestBody": body("sync-request"),
                "responses": { "200": ok("sync-response", "verdicts, documents, the new cursor"), "400": err, "401": err, "403": revoked, "413": err, "422": err } } },
            "/v1/admin/devices": { "get": { "summary": "Sync state of every device, with attempts refused since its user was revoked (admin)", "responses": { "200": ok("device-status", "devices"), "401": err, "403": revoked } } },
            "/v1/admin/documents": { "get": { "summary": "Documents, heads, conflicts (admin); ?conflicts=true for only those with resolved conflicts",
                "parameters": [ { "name": "conflicts", "in": "query", "schema": { "type": "boolean" } } ],
                "responses": { "200": ok("document-status", "documents"), "401": err, "403": revoked } } },
            "/v1/admin/users": {
                "get": { "summary": "Users, revoked ones included (admin)", "responses": { "200": ok("user-list", "users"), "401": err, "403": revoked } },
                "post": { "summary": "Create a user (admin)", "requestBody": body("new-user"), "responses": { "201": ok("user-created", "the user and their enrolment token"), "400": err, "401": err, "403": revoked } } },
            "/v1/admin/users/{id}/revoke": { "post": { "summary": "Revoke a user and all their devices (admin)",
                "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": { "204": { "description": "revoked; their devices get 403 revoked and their claims are freed" }, "400": err, "401": err, "403": revoked, "404": err } } },
            "/v1/queue": { "get": { "summary": "The caller's queue with server deadlines, lights and claims (operators); ?all=true adds items in hand",
                "parameters": [ { "name": "all", "in": "query", "schema": { "type": "boolean" } } ],
                "responses": { "200": ok("queue", "queue entries"), "401": err, "403": revoked } } },
            "/v1/queue/{doc}/claim": { "post": { "summary": "Take or renew a lease on a queue item",
                "parameters": [ { "name": "doc", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": { "200": ok("claim", "you hold it"), "401": err, "403": revoked, "404": err, "409": err } } },
            "/v1/queue/{doc}/release": { "post": { "summary": "Give a claim up",
                "parameters": [ { "name": "doc", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": { "204": { "description": "released" }, "401": err, "403": revoked, "409": err } } },
            "/v1/admin/stats": { "get": { "summary": "Supervision indicators for a town or the county",
                "parameters": [
                    { "name": "town", "in": "query", "schema": { "type": "string" } },
                    { "name": "from", "in": "query", "schema": { "type": "integer" } },
                    { "name": "to", "in": "query", "schema": { "type": "integer" } } ],
                "responses": { "200": ok("indicators", "indicators"), "401": err, "403": revoked } } },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "ok" } } } },
            "/readyz": { "get": { "summary": "Readiness: a write can land now (free disk, a writable database)", "security": [],
                "responses": { "200": { "description": "ready" }, "503": err } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [], "responses": { "200": { "description": "text exposition" } } } }
        }
    });
    // Transport limits: every route but /healthz may be busy; routes with a body have its caps and
    // deadline; registration has a daily quota; release answers 404 like claim.
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else { continue };
            for (method, op) in ops.iter_mut() {
                let Some(responses) = op["responses"].as_object_mut() else { continue };
                if path != "/healthz" {
                    responses.insert("503".into(), busy.clone());
                }
                if method == "post" && op_has_body(path) {
                    responses.insert("408".into(), slow.clone());
                    responses.insert("413".into(), large.clone());
                }
                if path == "/v1/devices" {
                    responses.insert("429".into(), quota.clone());
                }
                if path == "/v1/queue/{doc}/release" {
                    responses.insert("404".into(), err.clone());
                }
            }
        }
    }
    doc
}

/// Routes that read a request body.
fn op_has_body(path: &str) -> bool {
    matches!(path, "/v1/devices" | "/v1/sync" | "/v1/admin/users")
}
