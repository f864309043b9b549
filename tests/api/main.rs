//! The one integration-test binary: the real server, over HTTP, against real PostgreSQL.

mod admin;
mod auth;
mod cleanup;
mod connections;
mod conversations;
mod demo;
mod dev_server;
mod faults;
mod helpers;
mod http;
mod isolation;
mod lanes;
mod limits;
mod media;
mod openapi;
mod orders;
mod products;
mod settings;
mod startup;
mod tenancy;
mod tls;
mod users;
mod validation;
mod ws;
