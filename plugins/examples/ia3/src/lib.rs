//! Example dynamic plugin: the IA3 strategy, loaded at run time.
