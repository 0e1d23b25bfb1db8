"""The local stack's components, one module each, all behind `base.Component`."""
