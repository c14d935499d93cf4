"""Files (OpenAI Files API): uploaded batch inputs and generated batch outputs."""
