"""Pure rules of Simwire: no I/O, no framework, plain values in and out."""
