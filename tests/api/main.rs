//! The one integration-test binary: the real server, over HTTP, against real PostgreSQL.

mod admin;
mod auth;
mod browser;
mod cleanup;
mod connections;
mod console;
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
mod uploads;
mod users;
mod validation;
