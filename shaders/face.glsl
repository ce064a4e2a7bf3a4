#version 330 core
// Lit, textured face mesh: Lambert + a little Blinn-Phong specular, smooth vertex normals.
// Inputs are in image space (x right, y down, +z away from the camera); the matrices do the rest.

#if defined VERTEX_SHADER

in vec3 in_position;  // image pixels
in vec3 in_normal;    // image space, unnormalised
in vec2 in_uv;

uniform mat4 u_mvp;            // image pixels -> clip
uniform mat4 u_modelview;      // image pixels -> view space (y up, +z towards the viewer)
uniform mat3 u_normal_matrix;  // image-space normals -> view space

out vec3 v_pos;
out vec3 v_normal;
out vec2 v_uv;

void main() {
    v_pos = (u_modelview * vec4(in_position, 1.0)).xyz;
    v_normal = u_normal_matrix * in_normal;
    v_uv = in_uv;
    gl_Position = u_mvp * vec4(in_position, 1.0);
}

#elif defined FRAGMENT_SHADER

uniform sampler2D u_texture;
uniform bool u_textured;
uniform bool u_lit;
uniform bool u_ortho;          // orthographic view: the viewer direction is constant
uniform vec3 u_albedo;         // colour when untextured
uniform vec3 u_light_dir;      // view space, towards the light
uniform float u_ambient;
uniform float u_diffuse;
uniform float u_specular;
uniform float u_shininess;

in vec3 v_pos;
in vec3 v_normal;
in vec2 v_uv;

out vec4 f_color;

void main() {
    vec4 albedo = u_textured ? texture(u_texture, v_uv) : vec4(u_albedo, 1.0);
    if (!u_lit) {
        f_color = albedo;  // unlit: the texture as baked (alpha = valid mask), for re-projection checks
        return;
    }
    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) n = -n;  // the open mesh seen from behind: light its inside
    vec3 v = u_ortho ? vec3(0.0, 0.0, 1.0) : normalize(-v_pos);
    vec3 l = normalize(u_light_dir);
    float lambert = max(dot(n, l), 0.0);
    vec3 h = normalize(l + v);
    float spec = lambert > 0.0 ? pow(max(dot(n, h), 0.0), u_shininess) : 0.0;
    vec3 c = albedo.rgb * (u_ambient + u_diffuse * lambert) + vec3(u_specular * spec);
    f_color = vec4(c, 1.0);
}

#endif
