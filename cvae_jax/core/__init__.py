"""The math of VAEs: distributions, likelihoods, priors, the Flax models and the per-example ELBO terms."""
