//! The model file placeholder (filled in below).
