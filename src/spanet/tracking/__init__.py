"""Tracks from a multi-object tracker to identities across cameras: MOTChallenge files, association, its page."""
