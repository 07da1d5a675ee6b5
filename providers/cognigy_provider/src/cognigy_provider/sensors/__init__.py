"""The Cognigy.AI sensor: waits for a challenger training, deferring to the trigger."""
