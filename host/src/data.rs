//! Datasets on disk (placeholder).
