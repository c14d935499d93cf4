"""Chat completions (OpenAI shape): the request body shared by batch lines and the synchronous endpoint."""
