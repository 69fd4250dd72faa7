"""The synthetic cross-view dataset: a cast of identities and cameras (scene) of a site (domain), one crop drawn (render), a whole
dataset in the Market-1501 layout written (generate)."""
