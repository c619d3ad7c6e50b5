//! S3 store (being written by another helper).
