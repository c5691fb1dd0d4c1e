//! seccomp (placeholder until written).
