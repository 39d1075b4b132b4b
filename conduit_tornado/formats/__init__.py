"""Client-facing API formats other than chat completions, translated to and from chat.

Every provider adapter speaks chat completions; a route such as the Responses API turns
its request into a chat request for the adapters and their answer back into its own
shapes here, as pure functions over dicts, so each translation is tested on its own.
"""
