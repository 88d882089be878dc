//! Helpers for the end-to-end tests: a real Salt lab per test binary, and polling with deadlines.
