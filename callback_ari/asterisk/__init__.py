"""The Asterisk adapters: ARI (REST, events, WebSocket), AMI (protocol, client), FastAGI wire."""
