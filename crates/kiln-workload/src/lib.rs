//! kiln-workload owns what runs in a sandbox, between the engine (sandboxes and processes, which
//! knows no languages) and the services above: a program in a language, compiled with its own
//! limits and then run ([`program`]); next, function harnesses and codelets. It turns a
//! language's recipe and limits into engine processes and their results into one verdict.

pub mod program;

pub use program::{
    limit_overrides, run_limits, run_program, CompileResult, Program, ProgramError, ProgramResult,
    COMPILE_OUTPUT_KEPT,
};
pub mod function;
pub mod mount;
pub mod workspace;
