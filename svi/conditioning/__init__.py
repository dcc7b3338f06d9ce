"""Conditioning streams beyond text and image: audio (talk) and pose (dance).

Submodules are imported by their users so that importing the package stays cheap (no torch, no
mediapipe): `svi.conditioning.audio`, `.wav2vec`, `.pose`, `.pose_render`, `.audio_adapter`,
`.pose_encoder`.
"""
