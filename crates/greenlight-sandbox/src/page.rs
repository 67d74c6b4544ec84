//! The browser page: one self-contained HTML file (inline CSS and JS, no network).

use axum::response::Html;

pub(crate) async fn index() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
