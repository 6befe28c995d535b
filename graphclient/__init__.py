"""Everything that speaks to Microsoft Graph: auth, transport, retry policy, throttle, errors."""
