//! Training on images: the task that [`common::train::train`] runs.
