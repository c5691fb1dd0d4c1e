//! kiln-server owns Kiln's HTTP faces over the service core (`kiln-core`): the code-runner job
//! API (`/v1/*`, with Kiln's extensions), the sandbox API (`/v1/sandboxes`), the function and codelet API (`/v1/functions`,
//! `/v1/codelets`), a Piston v2 compatible API (`/api/v2/*`), a Judge0 CE 1.13.1 compatible API (`/judge0/*`), bearer tokens, the embedded Pusher endpoint's view of
//! job events (`kiln-pusher` does the protocol), SSE, metrics, the OpenAPI description built from
//! the routes, the listener with its connection limits, and the wiring of the service on one
//! machine (SQLite records, job logs on disk, the fair in-process queue).

pub mod app;
pub mod auth;
pub mod body;
pub mod coderunner;
pub mod config;
pub mod error;
pub mod forward;
pub mod functions;
pub mod judge0;
pub mod links;
pub mod listener;
pub mod openapi;
pub mod piston;
pub mod realtime;
pub mod sandboxes;
pub mod server;
pub mod state;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod http_tests_blobs;
#[cfg(test)]
mod http_tests_functions;
#[cfg(test)]
mod http_tests_judge0;
#[cfg(test)]
mod http_tests_piston;
