//! The Kubernetes-compatible API server.
//!
//! Where to start: [`Server::start`] (`server.rs`) wires everything; a request goes
//! `server.rs` (TLS, authentication, routing) → `handlers.rs` (authorization, verb) →
//! [`api::ResourceApi`] (`api.rs`: decoding, patch, apply, lists) → [`registry::Registry`]
//! (`registry.rs`: create/update/delete with compare-and-swap) → the kind's
//! [`resource::Strategy`] (`kinds/*.rs`: defaulting, validation, allocation) → storage
//! (`dualstack-store`). Watches are served from the watch cache (`watch.rs`).

pub mod api;
pub mod auth;
pub mod authz;
pub mod config;
pub mod conn;
pub mod controllers;
pub mod discovery;
pub mod handlers;
pub mod health;
pub mod kinds;
pub mod kubelet;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod registry;
pub mod request;
pub mod resource;
pub mod server;
pub mod tls;
pub mod watch;

pub use server::Server;
