"""Enumerations of the Camtrap DP profile (package metadata). Apart from camtrap.py, which loads
the catalogue (pandas), so that the command line's help can list them cheaply."""

from __future__ import annotations

SAMPLING_DESIGNS = ("simpleRandom", "systematicRandom", "clusteredRandom", "experimental", "targeted", "opportunistic")
CAPTURE_METHODS = ("activityDetection", "timeLapse")
CONTRIBUTOR_ROLES = ("contact", "principalInvestigator", "rightsHolder", "publisher", "contributor")
TAXON_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "subspecies")
