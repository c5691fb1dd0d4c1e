//! Kiln's integration tests, in one binary to keep link time down: escape tests, verdicts,
//! accounting and cleanup, all against real sandboxes.

mod artifacts;
mod blobs;
mod cli;
mod clients;
mod codelets;
mod common;
mod escape;
mod escape_shared;
mod function_cli;
mod function_mounts;
mod functions;
mod instances;
mod judge0;
mod judge0_options;
mod languages;
mod lifecycle;
mod piston;
mod sandbox_cli;
mod sandbox_code;
mod sandbox_files;
mod sandbox_ports;
mod sandbox_processes;
mod sandbox_util;
mod sandboxes;
mod server;
mod server_limits;
mod server_output;
mod stages;
mod verdicts;
