//! cgroups (placeholder until written).
