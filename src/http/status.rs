//! `GET /`: a small human status page.

use super::AppState;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};

pub async fn page(state: web::Data<AppState>) -> HttpResponse {
    let node = &state.node;
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>hostie</title></head>\n\
         <body><h1>hostie {version}</h1>\n\
         <p>A registry for Wechaty Puppet Services.</p>\n\
         <ul><li>node: <code>{node_id}</code></li>\n\
         <li>live sessions: {sessions}</li>\n\
         <li>state: {state}</li></ul>\n\
         <p>Discovery: <code>GET /v0/hosties/{{token}}</code>. \
         Registration: WebSocket <code>/v0/websocket</code>.</p></body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        node_id = html_escape(&node.id().0),
        sessions = node.live_sessions(),
        state = if node.is_draining() {
            "draining"
        } else {
            "serving"
        },
    );
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(body)
}

/// The node id is operator-supplied, but still escaped: a page must not be injectable.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
