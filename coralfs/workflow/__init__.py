"""Workflows built on the repository: releases (semantic versions) for now; experiments,
changelogs, profiles, ci and optimize come here too (DESIGN §8)."""
