"""The synthetic cross-view dataset: a site's look (domain), a cast of identities and cameras (scene), one crop drawn
(render), a whole dataset in the Market-1501 layout written (generate)."""
