"""Views: the multi-view generator of the loader and the masking / perturbation of views on the device."""
