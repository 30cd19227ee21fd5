"""Small widgets that own their look; screens feed them data ("attributes down")."""
