"""The websocket gateway and browser SDK -- arrives with issue 4."""
