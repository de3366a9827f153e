"""End-to-end studies: one module per study (config -> runs -> tables -> plots)."""
