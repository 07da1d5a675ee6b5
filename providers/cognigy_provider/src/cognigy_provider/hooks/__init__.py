"""The Cognigy.AI hook: reads a `cognigy` connection and hands out sync and async clients."""
