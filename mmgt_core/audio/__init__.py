"""Audio: waveform preparation, Stage-I features (WavLM + EDGE) and Stage-II features (wav2vec2).

Kept import-free on purpose: librosa, soxr and transformers load only when a submodule is used.
"""
