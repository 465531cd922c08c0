"""An example of a lab's own training code, trained by scalesweep through its Python trainer interface."""
