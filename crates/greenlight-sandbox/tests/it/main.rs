//! Integration tests: a real sandbox on 127.0.0.1:0 driven over HTTP and WebSocket.

mod click;
mod commands;
mod helpers;
mod home;
mod metadata;
mod socket_mode;
mod web_api;
