//! int8 quantisation (placeholder).
