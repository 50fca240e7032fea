"""The team gateway: users with their own keys and limits. Owns `users.py` (the people, their
hashed keys, the store) and `limits.py` (each user's budget in this process). May import
`providers.budget` (the admission arithmetic is the same as for provider keys); nothing here
imports the server."""
