"""The Cognigy.AI trigger: polls a training from the triggerer until it ends or its deadline passes."""
