"""Wire format of Dify's inner API: frames, envelopes, request and result entities."""
