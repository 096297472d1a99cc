"""The sample app: streams a data set as requests and sends the true labels later."""
