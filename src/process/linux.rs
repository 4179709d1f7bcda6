//! Linux implementation of [`super::Process`].
