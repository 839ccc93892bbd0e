"""Tags: label vocabulary, schemes, sub-token alignment, CRF head and scorer."""
