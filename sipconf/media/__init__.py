"""Sounds, recordings and transcription: audio the node fetches, renders, writes."""
