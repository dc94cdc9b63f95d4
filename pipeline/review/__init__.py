"""People in the loop: show a review record, take a person's verdict, turn it into label records (no Kafka here)."""
