-- POST /heroes/ with a unique name per request.
request = post_hero
