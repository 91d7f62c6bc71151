//! Dataset download (placeholder).
