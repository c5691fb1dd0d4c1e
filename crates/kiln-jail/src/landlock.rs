//! landlock (placeholder until written).
