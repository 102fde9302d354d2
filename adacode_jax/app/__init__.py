"""The web app (Gradio): restore, compare and explore codebooks in a browser."""
